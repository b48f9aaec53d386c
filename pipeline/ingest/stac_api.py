"""STAC API reader: search ``POST {url}/search`` for the job's area, period and tiles, then read the items found.

Items are turned into scenes by exactly the code that reads Item JSON files (:func:`suelo.ingest.stac.item_scene`:
asset names, radiometry rules, ``https`` hrefs through ``/vsicurl/``), so a search result and the same items saved
to a file give the same scenes. Only :mod:`urllib` is used: the search is a few JSON requests, not worth a client
library, and every failure becomes one :class:`InputError` line naming the URL.

Paging follows the STAC API ``next`` link: a GET link is fetched as is; a POST link sends its ``body``, merged into
the previous request body when ``merge`` is true (or the previous body when it gives none).

With ``access.remote_hosts`` the API URL and every ``next`` link must be on those hosts too, and the items' hrefs
follow the same rules as those of Item files (:mod:`suelo.ingest.confine`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from suelo import __version__
from suelo.errors import ConfigError, InputError
from suelo.ingest.confine import UNCONFINED, InputAccess
from suelo.ingest.scene import Scene, SearchContext
from suelo.ingest.stac import collection_features, item_scene
from suelo.settings import IngestSpec, StacApiInput

#: Items asked per page: small enough for every server's maximum (Earth Search allows 250 at most by default).
PAGE_LIMIT = 100
#: A search page is JSON metadata; anything larger is not a page and is not read into memory.
MAX_PAGE_BYTES = 256 * 1024**2


def discover(
    spec: StacApiInput,
    ingest: IngestSpec,
    *,
    context: SearchContext | None = None,
    access: InputAccess | None = None,
) -> list[Scene]:
    """One :class:`Scene` per item the API returns for the job's bbox, period and ``spec.collections``."""
    del ingest  # band selection happens when scenes are read, as for the file readers
    access = access or UNCONFINED
    if context is None or context.bbox_wgs84 is None:
        raise ConfigError(f"stac_api input {spec.url}: a search needs an area; give the job an aoi or tiles")
    access.check_url(spec.url, spec.url, raster=False)  # malformed (http://h[:9/v1) or off the host list
    scenes = []
    for item, base in search(spec, search_body(spec, context), access):
        cloud = item.get("properties", {}).get("eo:cloud_cover") if isinstance(item.get("properties"), dict) else None
        # Servers without the query extension ignore the filter silently; the items say their cloud cover.
        if spec.max_cloud_cover is not None and isinstance(cloud, (int, float)) and cloud > spec.max_cloud_cover:
            continue
        scenes.append(item_scene(item, base, access, spec.product_level))
    return scenes


def search_body(spec: StacApiInput, context: SearchContext) -> dict[str, Any]:
    """The JSON body of the first ``POST /search``."""
    assert context.bbox_wgs84 is not None
    body: dict[str, Any] = {
        "collections": list(spec.collections),
        "bbox": [round(v, 6) for v in context.bbox_wgs84],
        "datetime": context.datetime_interval(),
        "limit": min(PAGE_LIMIT, spec.max_items),
    }
    if spec.max_cloud_cover is not None:
        # The query extension is what Earth Search and Planetary Computer both understand (CQL2 is not everywhere).
        body["query"] = {"eo:cloud_cover": {"lte": spec.max_cloud_cover}}
    return body


def search(
    spec: StacApiInput, body: dict[str, Any], access: InputAccess | None = None
) -> list[tuple[dict[str, Any], str]]:
    """All items of a search as (item, base URL for its relative hrefs), following ``next`` links, at most max_items.

    An item seen on an earlier page is skipped (servers paging by offset repeat items when the catalogue changes
    meanwhile); a ``next`` link that repeats an earlier request ends the search instead of looping forever.
    """
    request: tuple[str, str, dict[str, Any] | None] | None = ("POST", spec.url.rstrip("/") + "/search", body)
    done: set[str] = set()
    found: list[tuple[dict[str, Any], str]] = []
    ids: set[str] = set()
    while request is not None and len(found) < spec.max_items:
        method, url, payload = request
        key = json.dumps([method, url, payload], sort_keys=True)
        if key in done:
            break
        done.add(key)
        page = _fetch(method, url, payload, spec.timeout_s)
        features = _features(url, page)
        if not features:
            break
        for feature in features:
            item_id = feature.get("id")
            if isinstance(item_id, str) and item_id in ids:
                continue
            if isinstance(item_id, str):
                ids.add(item_id)
            found.append((feature, _self_href(feature) or url))
            if len(found) >= spec.max_items:
                break
        request = _next_request(url, page, method, payload)
        if request is not None:
            (access or UNCONFINED).check_url(request[1], url, raster=False)  # a next link to another host
    return found


def _fetch(method: str, url: str, payload: dict[str, Any] | None, timeout_s: float) -> Any:
    data = json.dumps(payload).encode("utf-8") if method == "POST" and payload is not None else None
    headers = {"Accept": "application/geo+json, application/json", "User-Agent": f"suelo/{__version__}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read(MAX_PAGE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = _error_detail(exc)
        raise InputError(url, f"STAC API {method} answered HTTP {exc.code} {exc.reason}{detail}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise InputError(url, f"STAC API did not answer within {timeout_s:g} s (the input's timeout_s)") from exc
        raise InputError(url, f"cannot reach the STAC API ({reason}); check the URL and the network") from exc
    except TimeoutError as exc:
        raise InputError(url, f"STAC API did not answer within {timeout_s:g} s (the input's timeout_s)") from exc
    except OSError as exc:
        raise InputError(url, f"cannot reach the STAC API ({exc})") from exc
    except ValueError as exc:  # a malformed URL: urllib's "Invalid IPv6 URL", http.client.InvalidURL
        raise InputError(url, f"malformed STAC API URL ({exc})") from exc
    if len(raw) > MAX_PAGE_BYTES:
        raise InputError(url, f"STAC API answer is larger than {MAX_PAGE_BYTES} bytes; not a search page")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(url, f"STAC API answer is not JSON ({exc}): {raw[:80]!r}") from exc
    except RecursionError:
        raise InputError(url, "STAC API answer is not JSON (nested too deeply)") from None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's own explanation (STAC APIs answer errors with {"code", "description"}), shortened to a line."""
    try:
        text = exc.read(2000).decode("utf-8", "replace")
    except OSError:
        return ""
    try:
        document = json.loads(text)
        if isinstance(document, dict):
            text = str(document.get("description") or document.get("detail") or document.get("message") or text)
    except json.JSONDecodeError:
        pass
    text = " ".join(text.split())
    return f": {text[:300]}" if text else ""


def _features(url: str, page: Any) -> list[dict[str, Any]]:
    if not isinstance(page, dict) or page.get("type") != "FeatureCollection":
        kind = page.get("type") if isinstance(page, dict) else type(page).__name__
        raise InputError(url, f"STAC API answer is not a GeoJSON FeatureCollection (type {kind!r})")
    return collection_features(url, page, "STAC API FeatureCollection")


def _self_href(item: dict[str, Any]) -> str | None:
    for link in item.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "self" and str(link.get("href", "")).startswith("http"):
            return str(link["href"])
    return None


def _next_request(
    url: str, page: dict[str, Any], method: str, payload: dict[str, Any] | None
) -> tuple[str, str, dict[str, Any] | None] | None:
    """The request the page's ``next`` link asks for (STAC API Item Search pagination), or None on the last page."""
    link = next(
        (entry for entry in page.get("links") or [] if isinstance(entry, dict) and entry.get("rel") == "next"), None
    )
    if link is None:
        return None
    href = link.get("href")
    if not isinstance(href, str) or not href.startswith(("http://", "https://")):
        raise InputError(url, f"STAC API 'next' link has no http(s) href: {href!r}")
    next_method = str(link.get("method", "GET")).upper()
    if next_method == "GET":
        return ("GET", href, None)
    if next_method != "POST":
        raise InputError(url, f"STAC API 'next' link has an unsupported method {next_method!r}")
    body = link.get("body")
    if body is not None and not isinstance(body, dict):
        raise InputError(url, f"STAC API 'next' link body is not a JSON object: {body!r}")
    if body is None:
        return ("POST", href, payload)
    if link.get("merge") is True:
        return ("POST", href, {**(payload or {}), **body})
    return ("POST", href, body)

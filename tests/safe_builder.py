"""Build tiny Sentinel-2 SAFE products with the real layout, real metadata structure and real JP2 files.

The products are a few dozen pixels wide so tests stay fast, but everything the SAFE reader looks at (the
``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml`` structure and namespaces, the ``GRANULE/*/IMG_DATA/R10m`` layout, file
names, JPEG 2000 encoding with georeferencing) is what ESA ships.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine

BAND_ID_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
NATIVE_RESOLUTION = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20, "SCL": 20,
}  # fmt: skip
DEFAULT_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: JP2OpenJPEG creation options for lossless (reversible 5/3 wavelet) encoding, so pixel values round-trip.
LOSSLESS = {"QUALITY": "100", "REVERSIBLE": "YES"}


def default_band(name: str, width: int = 20, height: int = 20) -> np.ndarray:
    """A distinct, nowhere-zero (0 is no data) uint16 pattern for ``name`` at its native resolution."""
    res = NATIVE_RESOLUTION[name]
    h, w = max(1, height * 10 // res), max(1, width * 10 // res)
    base = 1000 + 100 * BAND_ID_ORDER.index(name)
    return (base + np.arange(h * w).reshape(h, w)).astype(np.uint16)


def write_jp2(path: Path, array: np.ndarray, crs: str, transform: Affine) -> None:
    """Write one band as lossless JPEG 2000, the way the SAFE bands are encoded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = "uint8" if array.dtype == np.uint8 else "uint16"
    with rasterio.open(
        path,
        "w",
        driver="JP2OpenJPEG",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=dtype,
        crs=crs,
        transform=transform,
        **LOSSLESS,
    ) as dst:
        dst.write(array.astype(dtype), 1)


def product_name(level: str, acquired: str, baseline: str, tile: str) -> str:
    start = dt.datetime.fromisoformat(acquired.replace("Z", "+00:00"))
    stamp = start.strftime("%Y%m%dT%H%M%S")
    return f"S2B_MSI{level}_{stamp}_N{baseline.replace('.', '')}_R051_{tile}_{start:%Y%m%d}T134104.SAFE"


def build_safe(
    root: Path,
    *,
    baseline: str = "04.00",
    level: str = "L2A",
    tile: str = "T31UFS",
    acquired: str = "2021-06-01T10:40:21.024Z",
    bands: Mapping[str, np.ndarray] | None = None,
    scl: np.ndarray | None = None,
    crs: str = "EPSG:32631",
    origin: tuple[float, float] = (600000, 5700000),
    width: int = 20,
    height: int = 20,
    omit_offsets: bool = False,
    omit_fields: Iterable[str] = (),
    offset: int | str = -1000,
    quantification: str = "10000",
    name: str | None = None,
) -> Path:
    """Write a SAFE product under ``root`` and return its ``.SAFE`` folder.

    ``bands`` maps band names to uint16 arrays; each is written at the resolution its shape implies for a tile
    of ``width`` x ``height`` 10 m pixels (a 10 x 10 array in a 20 x 20 tile is a 20 m band, in ``R20m``).
    Without ``bands`` the ten Presto bands get :func:`default_band` patterns. ``scl`` (L2A only) defaults to
    class 4 (vegetation) everywhere at 20 m. ``omit_fields`` drops metadata elements by tag name, e.g.
    ``("PRODUCT_START_TIME",)``. The offset list is written from baseline 04.00 on, as ESA does.
    """
    if level not in ("L2A", "L1C"):
        raise ValueError(f"level is L2A or L1C, got {level}")
    if bands is None:
        bands = {b: default_band(b, width, height) for b in DEFAULT_BANDS}
    if level == "L2A" and scl is None:
        scl = np.full((max(1, height // 2), max(1, width // 2)), 4, dtype=np.uint8)
    safe = root / (name or product_name(level, acquired, baseline, tile))
    stamp = dt.datetime.fromisoformat(acquired.replace("Z", "+00:00")).strftime("%Y%m%dT%H%M%S")
    granule = safe / "GRANULE" / f"{level}_{tile}_A022130_{stamp}"
    img = granule / "IMG_DATA"

    layers: dict[str, np.ndarray] = dict(bands)
    if level == "L2A" and scl is not None:
        layers["SCL"] = scl
    image_files: list[str] = []
    for band, array in layers.items():
        res = round(10 * width / array.shape[1])
        transform = Affine(res, 0, origin[0], 0, -res, origin[1])
        if level == "L2A":
            stem = f"{tile}_{stamp}_{band}_{res}m"
            path = img / f"R{res}m" / f"{stem}.jp2"
        else:
            stem = f"{tile}_{stamp}_{band}"
            path = img / f"{stem}.jp2"
        write_jp2(path, np.asarray(array), crs, transform)
        image_files.append(path.relative_to(safe).with_suffix("").as_posix())

    with_offsets = not omit_offsets and tuple(int(p) for p in baseline.split(".")) >= (4, 0)
    xml = _mtd_xml(level, safe.name, acquired, baseline, image_files, with_offsets, offset, quantification)
    for tag in omit_fields:
        xml = _drop_element(xml, tag)
    (safe / f"MTD_MSI{level}.xml").write_text(xml, encoding="utf-8")
    (safe / "manifest.safe").write_text('<?xml version="1.0" encoding="UTF-8"?>\n<xfdu:XFDU/>\n', encoding="utf-8")
    (granule / "MTD_TL.xml").write_text('<?xml version="1.0" encoding="UTF-8"?>\n<n1:Level-2A_Tile_ID/>\n')
    (granule / "QI_DATA").mkdir(exist_ok=True)
    for folder in ("AUX_DATA", "DATASTRIP", "HTML", "rep_info"):
        (safe / folder).mkdir(exist_ok=True)
    return safe


def zip_safe(safe_dir: Path, zip_path: Path | None = None) -> Path:
    """Zip a SAFE folder like Copernicus does: one ``NAME.SAFE/`` folder (with directory entries) inside."""
    zip_path = zip_path or safe_dir.with_name(safe_dir.name[: -len(".SAFE")] + ".zip")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(safe_dir, f"{safe_dir.name}/")
        for path in sorted(safe_dir.rglob("*")):
            archive.write(path, f"{safe_dir.name}/{path.relative_to(safe_dir).as_posix()}")
    return zip_path


def _drop_element(xml: str, tag: str) -> str:
    start, end = xml.find(f"<{tag}"), xml.find(f"</{tag}>")
    if start < 0 or end < 0:
        raise ValueError(f"no element {tag} to omit")
    return xml[:start] + xml[end + len(f"</{tag}>") :]


def _mtd_xml(
    level: str,
    name: str,
    acquired: str,
    baseline: str,
    image_files: list[str],
    with_offsets: bool,
    offset: int | str,
    quantification: str,
) -> str:
    """Product metadata with the element structure of ESA's PSD 14 ``MTD_MSIL2A.xml``/``MTD_MSIL1C.xml``."""
    start = dt.datetime.fromisoformat(acquired.replace("Z", "+00:00"))
    stop = (start + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    l2a = level == "L2A"
    xsd = f"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level[1:]}.xsd"
    n = baseline.replace(".", "")
    product_type, processing_level = ("S2MSI2A", "Level-2A") if l2a else ("S2MSI1C", "Level-1C")
    images = "\n".join(f"              <IMAGE_FILE>{escape(f)}</IMAGE_FILE>" for f in image_files)
    bands_list = "\n".join(f"            <BAND_NAME>{b}</BAND_NAME>" for b in BAND_ID_ORDER)
    if l2a:
        radiometry = f"""
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">{quantification}</BOA_QUANTIFICATION_VALUE>
        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
        <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>"""
        if with_offsets:
            entries = "\n".join(f'        <BOA_ADD_OFFSET band_id="{i}">{offset}</BOA_ADD_OFFSET>' for i in range(13))
            radiometry += f"\n      <BOA_ADD_OFFSET_VALUES_LIST>\n{entries}\n      </BOA_ADD_OFFSET_VALUES_LIST>"
    else:
        radiometry = f'\n      <QUANTIFICATION_VALUE unit="none">{quantification}</QUANTIFICATION_VALUE>'
        if with_offsets:
            entries = "\n".join(
                f'        <RADIO_ADD_OFFSET band_id="{i}">{offset}</RADIO_ADD_OFFSET>' for i in range(13)
            )
            radiometry += f"\n      <Radiometric_Offset_List>\n{entries}\n      </Radiometric_Offset_List>"
    scl_info = (
        """
      <Scene_Classification_List>
        <Scene_Classification_ID>
          <SCL_TEXT>SC_NODATA</SCL_TEXT>
          <SCL_INDEX>0</SCL_INDEX>
        </Scene_Classification_ID>
      </Scene_Classification_List>"""
        if l2a
        else ""
    )
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-{level[1:]}_User_Product xmlns:n1="{xsd}"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="{xsd}">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{acquired}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{stop}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{name}</PRODUCT_URI>
      <PROCESSING_LEVEL>{processing_level}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>{product_type}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <PRODUCT_DOI>https://doi.org/10.5270/S2_-znk9xsj</PRODUCT_DOI>
      <GENERATION_TIME>{start:%Y-%m-%d}T13:41:04.000000Z</GENERATION_TIME>
      <PREVIEW_IMAGE_URL>Not applicable</PREVIEW_IMAGE_URL>
      <PREVIEW_GEO_INFO>Not applicable</PREVIEW_GEO_INFO>
      <Datatake datatakeIdentifier="GS2B_{start:%Y%m%dT%H%M%S}_022130_N{baseline.replace(".", "")}">
        <SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{acquired}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>51</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
      <Query_Options completeSingleTile="true">
        <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
      </Query_Options>
      <Product_Organisation>
        <Granule_List>
          <Granule datastripIdentifier="S2B_OPER_MSI_{level}_DS_2BPS_{start:%Y%m%d}T134104_N{n}"
              granuleIdentifier="S2B_OPER_MSI_{level}_TL_2BPS_{start:%Y%m%d}T134104_A022130_N{n}"
              imageFormat="JPEG2000">
{images}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Image_Display_Order>
        <RED_CHANNEL>3</RED_CHANNEL>
        <GREEN_CHANNEL>2</GREEN_CHANNEL>
        <BLUE_CHANNEL>1</BLUE_CHANNEL>
      </Image_Display_Order>
      <Reflectance_Conversion>
        <U>0.970189366128801</U>
      </Reflectance_Conversion>{radiometry}
      <Band_List>
{bands_list}
      </Band_List>{scl_info}
    </Product_Image_Characteristics>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Product_Footprint>
      <Product_Footprint>
        <Global_Footprint>
          <EXT_POS_LIST>51.0 5.0 51.0 6.0 50.0 6.0 50.0 5.0 51.0 5.0 </EXT_POS_LIST>
        </Global_Footprint>
      </Product_Footprint>
      <RASTER_CS_TYPE>POINT</RASTER_CS_TYPE>
      <PIXEL_ORIGIN>1</PIXEL_ORIGIN>
    </Product_Footprint>
  </n1:Geometric_Info>
  <n1:Auxiliary_Data_Info/>
  <n1:Quality_Indicators_Info>
    <Cloud_Coverage_Assessment>12.5</Cloud_Coverage_Assessment>
  </n1:Quality_Indicators_Info>
</n1:Level-{level[1:]}_User_Product>
"""

"""Models: the Presto-compatible pixel-timeseries encoder, classifier heads and the CNN segmenter."""

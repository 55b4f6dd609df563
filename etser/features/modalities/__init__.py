"""The modalities stage 2 ships, one file each; each registers itself (etser.features.modality.register) and
the registry imports every module of this package when asked for a modality."""

"""Every place an image can live, behind one protocol (base.py): registries (registry/), OCI
layouts (layout.py), docker-save archives (dockerarchive.py). The implementations never import
each other; open.py opens the one a Location names."""

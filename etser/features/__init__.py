"""Stage 2: features of a data directory into the dump (docs/DESIGN.md, "Stage 2")."""

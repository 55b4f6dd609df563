"""Stages 3-4 and inference: learning from the dump dir, and using what was learned."""

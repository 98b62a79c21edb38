"""Writing the indexes: the gallery's diff and the store writes (builder), the parallel pipeline that decodes,
detects and embeds, the same work on a Ray cluster (distributed), and gallery edits (add, remove, rename)."""

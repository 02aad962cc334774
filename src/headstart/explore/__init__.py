"""Know your data: a 2-D map, clusters, outliers, label issues, near-duplicates and class
overlap, from the cached embeddings (``headstart explore``)."""

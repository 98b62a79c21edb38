"""Answering a query from a store: the searcher, the open-set identity rule, photo appearances, and the vector
arithmetic (L2 normalisation, PCA projection, similarity and distance) they share."""

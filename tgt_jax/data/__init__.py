"""Input data: the bundled digits, image folders, long-tail subsets,
batching."""

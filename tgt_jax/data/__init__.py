"""Input data: the bundled digit sets, image folders, long-tail subsets,
batching."""

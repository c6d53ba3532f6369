"""Static executor pieces: activation memory planning, the paged arena pool and CUDA graphs."""

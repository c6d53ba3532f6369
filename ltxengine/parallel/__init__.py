"""Running one generation over several processes with torch.distributed (issue 22)."""

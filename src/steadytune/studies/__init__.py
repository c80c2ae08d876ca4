"""Studies: seed studies run resumably by cooperating drivers, their policies, clusters and trackers."""

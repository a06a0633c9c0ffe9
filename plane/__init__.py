"""The management plane (L2): a REST API over the cluster's Temper state and actions."""

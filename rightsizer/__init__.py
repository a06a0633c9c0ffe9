"""Temper thread-aware rightsizer: CPU request recommendations written as pod annotations."""

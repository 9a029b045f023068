"""Data fixtures (owner: data work): prepared toy data sets for tests."""

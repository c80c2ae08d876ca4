"""Data: the tasks, reading GLUE and own files, tokenization (cached), the inputs of a trial, and metrics."""

"""Reporting: the analysis report (HTML or Markdown) and its figures."""

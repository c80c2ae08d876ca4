"""Forecasting failing runs from their first steps (Mosbach et al.'s signals): features, the model, its evaluation."""

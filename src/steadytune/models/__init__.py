"""Models: loading encoders and heads, the layout of encoder families, initialization, readouts, int8 twins."""

"""Training and evaluation, one module per model. Never imported by inference."""

"""wick's trainer: the Character.AI-shaped model in PyTorch, trained natively
in int8 with the runtime's own rounding rules, and its export directory."""

"""Training and evaluation machinery: LR schedules and optimizer (`solver`), checkpoints
(`checkpoints`), the legacy confusion-matrix metrics (`metrics`), and the trainer/evaluator.

Importing this package must not import Paddle; each module imports it where it is needed.
"""

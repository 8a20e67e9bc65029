"""segdistill: knowledge distillation for semantic segmentation on PaddlePaddle.

Importing this package must stay cheap and must not import Paddle (`segdistill --help` < 1 s).
Code that needs Paddle imports it through `segdistill_cli.paddle_env.import_paddle()`.
"""
__version__ = "0.1.0"

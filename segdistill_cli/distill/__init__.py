"""Distillation core: merge the teacher, resolve DISTILL pairs, add adapters and losses.

Modules (import them directly; this package imports nothing so the CLI stays Paddle-free):
- pairs.py     `resolve_pairs(...)`: pre-flight checks of names/shapes/adapters -> ResolvedPair
               (no Paddle import)
- merge.py     `merge_teacher(...)` around paddleslim.dist.merge; `check_teacher_frozen(program)`
- build.py     `add_distill_losses(program, startup, pairs, mask=...)` -> DistillLosses
- losses.py    the loss functions (l2, soft_label, kl, fsp, cwd) and their registry
- adapters.py  conv1x1 / bilinear student adapters, `is_adapter_param(name)`
- custom.py    `LOSS: custom` functions ("package.module:function") and their call contract
"""

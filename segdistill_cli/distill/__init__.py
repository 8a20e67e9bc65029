"""Distillation core: the teacher's life, resolve DISTILL pairs, add adapters and losses.

Modules (import them directly; this package imports nothing so the CLI stays Paddle-free):
- pairs.py     `resolve_pairs(...)`: pre-flight checks of names/shapes/adapters -> ResolvedPair
               (no Paddle import)
- teacher.py   the teacher's life (weights check, build, strict load, merge, kernels, frozen
               check) and its names (`TEACHER_PREFIX`, `merged_name`)
- build.py     `add_distill_losses(program, startup, pairs, mask=...)` -> DistillLosses
- registry.py  the built-in losses, each registered once (arity, shapes, mask, options, build)
- losses.py    the loss math (l2, soft_label, kl, dist, fsp, cwd)
- adapters.py  conv1x1 / bilinear student adapters, `is_adapter_param(name)`
- custom.py    `LOSS: custom` functions ("package.module:function") and their call contract
"""

"""Serving the app to people: identity (secret links), the gate (Host/Origin/token) and kernel limits.

- `identity`: names, team files, the key file and the links derived from it, the store's registry.
- `guard`: the checks every request passes before Voila sees it.
- `kernels`: the kernel manager that bounds and reclaims kernels.
- `launcher`: Voila with the gate and the kernel manager (`python -m dcai_widgets.serve NOTEBOOK ...`).
- `page`: the plain error line the notebook shows instead of a traceback.
Nothing here imports `dcai_widgets.widgets` (the panels import `identity`, not the other way round).
"""

"""Bridges to other imaging libraries (optional extras; nothing here is imported by the core).

- :mod:`idm_imaging.interop.deepinv`: our operators as deepinv physics and back, IDM as a deepinv
  ``Reconstructor``, deepinv's solvers as benchmark peers (``pip install idm-imaging[deepinv]``).
"""

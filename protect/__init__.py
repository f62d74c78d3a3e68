"""protect: make images unlearnable before publishing them.

The command line lives in `protect.cli`; the crafting engine in `protect.engine`.
"""

__version__ = "0.1.0"

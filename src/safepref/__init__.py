"""safepref: safety alignment with DPO, and the pitfalls of multi-model preference data.

Data flows one way: sources -> generate -> score -> recipe -> audit -> train -> evaluate -> report.
Each stage is a module with a small interface and a command of its own (``safepref --help``).
"""

__version__ = "0.1.0"

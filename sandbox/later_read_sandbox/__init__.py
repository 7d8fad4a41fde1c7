"""later-read's local sandbox: the simulator, real local servers, seeding, the demo and the fault suite.

Never imported by the production commands; `later-read sandbox ...` loads `later_read_sandbox.cli`.
"""

__version__ = "0.1.0"

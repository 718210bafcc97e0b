"""The commands: ``resnet-export``, ``resnet-bench``, ``resnet-serve``.

Importing the package routes SIGINT and SIGTERM through ``cli.interrupts`` before anything heavy
loads, so a command interrupted at any moment ends with one line and 130 (143).
"""

from resnet_deploy.cli import interrupts

interrupts.install()

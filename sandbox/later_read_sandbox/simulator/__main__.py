"""`python -m later_read_sandbox.simulator`: the simulator's command (SimulatorProcess starts it so)."""

from later_read_sandbox.simulator.server import simulator_command

simulator_command(prog_name="python -m later_read_sandbox.simulator")

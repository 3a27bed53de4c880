"""The simulated and target worlds: physics randomisation, effects, task variants, policy inputs, make/register.

Nothing here imports torch or SB3: a world is a plain Gymnasium env.
"""

"""`hashbay-agent --self-test`: walk the configured hardware with the daemon stopped and
say, line by line, what answers and what does not (README, "Bring-up on a real board").

`walk` holds the steps as data and the walk that ends in the safe state; `lines`, `bus`,
`motion` and `chains` the checks; `report` the results; `render` the table and JSON.
"""

"""Fleet tools: what runs beside the farm's broker or in front of many miners, not on one.

`hashbay fleet` (model, rendering, its MQTT client) lives here; so may other fleet
integrations, each in its own modules.
"""

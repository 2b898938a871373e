"""The ways in and out: commands and dispatch, MQTT, the control socket, the miner API."""

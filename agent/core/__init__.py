"""The shared vocabulary: statuses, events, the agent state, settings, alarms, records."""

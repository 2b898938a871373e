"""The agent: policy, state and the asyncio services that run the miner."""

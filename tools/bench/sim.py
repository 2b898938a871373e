"""CPU cost of the simulated rig (3 boards x 126 chips) while a host hashes on every chain."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass

from hashbay.agent.daemon.config import default_config_path, load_config
from hashbay.agent.hardware.rig import envelope_from
from hashbay.drivers.bm13xx.chain import Bm13xxChain, open_serial
from hashbay.drivers.bm13xx.frames import Job
from hashbay.drivers.eeprom import Eeprom24C02
from hashbay.drivers.envelope import SafetyEnvelope
from hashbay.drivers.errors import HardwareError
from hashbay.drivers.pmbus import DcDc
from hashbay.drivers.slot_pins import SlotPins
from hashbay.tools.bench import Figure
from hashbay.tools.sim.rig import SimRig

HASHING_S = 20.0  # real seconds of hashing measured
JOB_PERIOD_S = 5.0
BOARD_V = 13.4
FREQ_MHZ = 490.0
TICKET_DIFFICULTY = 256
RAIL_WAIT_S = 2.0


@dataclass(frozen=True)
class Sample:
    """Counters at one instant of the measured window."""

    wall_s: float
    process_cpu_s: float
    sim_cpu_s: float
    nonces: int
    work: float  # hashes the verified nonces stand for


def job(number: int) -> Job:
    seed = number.to_bytes(4, "big")
    return Job(
        job_id=number % 16,
        version=0x2000_0000,
        prev_hash=hashlib.sha256(b"prev" + seed).digest(),
        merkle_root=hashlib.sha256(b"merkle" + seed).digest(),
        ntime=0x6650_0000 + number,
        nbits=0x1703_0ECD,
    )


def sample(rig: SimRig, chains: list[Bm13xxChain]) -> Sample:
    return Sample(
        wall_s=time.monotonic(),
        process_cpu_s=time.process_time(),
        sim_cpu_s=rig.cpu_s,
        nonces=sum(chain.counters.nonces for chain in chains),
        work=sum(chip.work for chain in chains for chip in chain.counters.chips),
    )


async def power_slot(rig: SimRig, slot: int, pins: SlotPins, envelope: SafetyEnvelope) -> None:
    """The agent's bring-up: trust the EEPROM, power, set the rail, release reset."""
    wiring = rig.config.slot[slot]
    identity = Eeprom24C02(rig.i2c, wiring.eeprom_address, "EEPROM").read_identity()
    envelope.admit_board(slot, identity.limits)
    pins.enable_power(True)
    dcdc = DcDc(rig.i2c, slot, wiring.dcdc_address, envelope)
    deadline = time.monotonic() + RAIL_WAIT_S
    while True:
        try:
            dcdc.set_vout(BOARD_V)
            dcdc.on()
            break
        except HardwareError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)  # the converter answers once the hot-swap is up
    pins.hold_reset(False)


async def host(rig: SimRig) -> tuple[Sample, Sample, float]:
    """Bring every board up and hash; counters at the start and end of the window, and
    the hashrate the model says the chips deliver (hashes/s)."""
    config = rig.config
    envelope = envelope_from(config)
    pins = [
        SlotPins(s.presence_pin, s.power_pin, s.reset_pin, s.led_pin, rig.pin_factory)
        for s in config.slot
    ]
    ports = [open_serial(path) for path in rig.uart_paths]
    try:
        await asyncio.gather(*(power_slot(rig, i, p, envelope) for i, p in enumerate(pins)))
        await asyncio.sleep(0.3)
        chains = [
            Bm13xxChain(port, slot=i, envelope=envelope, check_zero_bits=8)
            for i, port in enumerate(ports)
        ]
        async with AsyncExitStack() as stack:
            for chain in chains:
                await stack.enter_async_context(chain.attached())
            await asyncio.gather(*(chain.enumerate() for chain in chains))
            for chain in chains:
                chain.set_version_mask()
                chain.set_ticket_difficulty(TICKET_DIFFICULTY)
            await asyncio.gather(
                *(
                    chain.ramp_frequency(FREQ_MHZ, step_mhz=25, step_delay_s=0.02)
                    for chain in chains
                )
            )
            start = sample(rig, chains)
            number = 0
            while (elapsed := time.monotonic() - start.wall_s) < HASHING_S:
                if elapsed >= number * JOB_PERIOD_S:
                    number += 1
                    for chain in chains:
                        chain.send_job(job(number))
                await asyncio.sleep(min(0.5, HASHING_S - elapsed))
            end = sample(rig, chains)
        model_hs = sum(slot["hashrate_ths"] for slot in rig.status()["slots"]) * 1e12
        return start, end, model_hs
    finally:
        for port in ports:
            port.close()
        for slot_pins in pins:
            slot_pins.close()


def run() -> list[Figure]:
    config = load_config(default_config_path())
    config = dataclasses.replace(config, sim=dataclasses.replace(config.sim, control_socket=False))
    rig = SimRig(config)
    rig.start()
    try:
        start, end, model_hs = asyncio.run(host(rig))
    finally:
        rig.stop()
    wall_s = end.wall_s - start.wall_s
    sim_cpu_s = end.sim_cpu_s - start.sim_cpu_s
    host_cpu_s = end.process_cpu_s - start.process_cpu_s - sim_cpu_s
    verified_hs = (end.work - start.work) / wall_s
    return [
        Figure("sim_thread_cpu", 100 * sim_cpu_s / wall_s, "% of one core"),
        Figure("nonces_delivered", (end.nonces - start.nonces) / wall_s, "nonces/s"),
        Figure("verified_vs_model_hashrate", verified_hs / model_hs, "ratio", "1 ± 0.05"),
        Figure("host_cpu_excluding_sim", 100 * host_cpu_s / wall_s, "% of one core"),
    ]

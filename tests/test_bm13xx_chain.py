"""The BM13xx chain driver over real pyserial on the simulated rig's pty, unchanged."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Iterator

import pytest
from gpiozero import DigitalOutputDevice

from hashbay.agent.daemon.config import Config, default_config_path, load_config
from hashbay.agent.hardware.rig import envelope_from
from hashbay.drivers.bm13xx.chain import Bm13xxChain, open_serial
from hashbay.drivers.bm13xx.frames import Job, nonce_reply
from hashbay.drivers.eeprom import Eeprom24C02
from hashbay.drivers.errors import DeviceMissingError, HardwareError, SafetyViolation
from hashbay.drivers.pmbus import DcDc
from hashbay.tools.sim.rig import SimRig

CHIPS = 42  # one chip per voltage domain: a short board with a standard 13.4 V rail


def small_rig_config(chips: int = CHIPS) -> Config:
    config = load_config(default_config_path())
    sim = dataclasses.replace(
        config.sim, chips_per_board=chips, chips_per_domain=1, modules=(0,), control_socket=False
    )
    return dataclasses.replace(config, sim=sim)


class Powered:
    """A running rig with slot 0 powered the way the agent powers it."""

    def __init__(self, chips: int = CHIPS) -> None:
        self.config = small_rig_config(chips)
        self.rig = SimRig(self.config)
        self.rig.start()
        self.envelope = envelope_from(self.config)
        slot = self.config.slot[0]
        factory = self.rig.pin_factory
        identity = Eeprom24C02(self.rig.i2c, slot.eeprom_address, "eeprom").read_identity()
        self.envelope.admit_board(0, identity.limits)
        self.power = DigitalOutputDevice(slot.power_pin, pin_factory=factory)
        self.reset = DigitalOutputDevice(slot.reset_pin, pin_factory=factory)
        self.power.on()
        self.dcdc = DcDc(self.rig.i2c, 0, slot.dcdc_address, self.envelope)
        self.nominal_v = identity.nominal_vout_mv / 1000

    async def rail_up(self, *, release_reset: bool = True) -> None:
        for _ in range(100):
            try:
                self.dcdc.set_vout(self.nominal_v)
                self.dcdc.on()
                break
            except HardwareError:
                await asyncio.sleep(0.02)  # the converter answers once the hot-swap is on
        if release_reset:
            self.reset.on()  # release the chain from reset
        await asyncio.sleep(0.3)

    def close(self) -> None:
        self.rig.stop()


@pytest.fixture
def powered() -> Iterator[Powered]:
    setup = Powered()
    yield setup
    setup.close()


@pytest.fixture
async def chain(powered: Powered) -> AsyncIterator[Bm13xxChain]:
    await powered.rail_up()
    port = open_serial(powered.rig.uart_paths[0])
    driver = Bm13xxChain(port, slot=0, envelope=powered.envelope, check_zero_bits=8)
    async with driver.attached():
        yield driver
    port.close()


def job(job_id: int, seed: bytes = b"x") -> Job:
    return Job(
        job_id,
        0x2000_0000,
        hashlib.sha256(seed + b"prev").digest(),
        hashlib.sha256(seed + b"merkle").digest(),
        0x6767_8B5C,
        0x1703_0ECD,
    )


async def test_enumerate_counts_addresses_and_identifies_the_chips(chain: Bm13xxChain) -> None:
    info = await chain.enumerate(expected_chips=CHIPS)
    assert (info.chip_count, info.model, info.interval) == (CHIPS, "BM1368", 6)
    assert len(chain.counters.chips) == CHIPS


async def test_enumerate_reports_a_chain_that_does_not_answer(powered: Powered) -> None:
    await powered.rail_up(release_reset=False)  # rail up, chain still held in reset
    port = open_serial(powered.rig.uart_paths[0])
    driver = Bm13xxChain(port, slot=0, envelope=powered.envelope)
    async with driver.attached():
        with pytest.raises(HardwareError, match="no chip answered"):
            await driver.enumerate()
    port.close()


async def test_missing_chip_is_reported_against_the_declared_count(
    powered: Powered, chain: Bm13xxChain
) -> None:
    powered.rig.chip_dead(0, 5)
    with pytest.raises(HardwareError, match="41 chips answered, the module declares 42"):
        await chain.enumerate(expected_chips=CHIPS)


async def test_full_bring_up_hashes_with_verified_nonces(
    powered: Powered, chain: Bm13xxChain
) -> None:
    await chain.enumerate(expected_chips=CHIPS)
    chain.set_version_mask()
    chain.set_ticket_difficulty(32)  # many nonces, so every chip shows up within seconds
    await chain.set_fast_baud()
    assert chain.port.baudrate == 1_000_000
    actual = await chain.ramp_frequency(500, step_mhz=50, step_delay_s=0.01)
    assert actual == pytest.approx(500, abs=1)
    chain.send_job(job(1))
    await asyncio.sleep(3.0)
    counters = chain.counters
    assert counters.nonces > 10
    assert counters.hw_errors == 0
    assert sum(c.nonces for c in counters.chips) == counters.nonces
    assert all(c.nonces > 0 for c in counters.chips)  # every chip's address decoded
    module = powered.rig.slots[0].module
    assert module is not None
    assert all(not chip.hung for chip in module.chain.chips)  # the ramp was gentle


async def test_overclocked_chip_shows_up_as_that_chips_hardware_errors(
    powered: Powered, chain: Bm13xxChain
) -> None:
    await chain.enumerate()
    chain.set_version_mask()
    chain.set_ticket_difficulty(256)
    await chain.ramp_frequency(450, step_mhz=50, step_delay_s=0.01)
    await chain.ramp_frequency(700, chip=3, step_mhz=50, step_delay_s=0.01)
    chain.send_job(job(2))
    await asyncio.sleep(3.0)
    errors = [c.hw_errors for c in chain.counters.chips]
    assert errors[3] > 0
    assert errors[3] == max(errors)
    assert sum(errors) - errors[3] <= 1


async def test_frequency_outside_the_envelope_is_refused_and_nothing_is_sent(
    powered: Powered, chain: Bm13xxChain
) -> None:
    await chain.enumerate()
    module = powered.rig.slots[0].module
    assert module is not None
    before = [c.freq_mhz for c in module.chain.chips]
    with pytest.raises(SafetyViolation, match=r"frequency 950\.0 MHz refused"):
        await chain.ramp_frequency(950)
    await asyncio.sleep(0.1)
    assert [c.freq_mhz for c in module.chain.chips] == before


async def test_clocks_never_round_above_the_envelope_and_chips_ramp_together(
    powered: Powered, chain: Bm13xxChain
) -> None:
    await chain.enumerate()
    limits = powered.envelope.board(0)
    # A site cap whose nearest PLL setting lies above it: 400.9 MHz rounds to 401.8.
    narrow = dataclasses.replace(limits, freq_max_mhz=400.9)
    powered.envelope.admit_board(0, narrow)
    targets = [400.9 if i % 2 else 300.0 for i in range(CHIPS)]
    applied = await chain.ramp_chips(targets, step_mhz=50, step_delay_s=0.01)
    assert max(applied) <= 400.9
    assert applied[0] == pytest.approx(300, abs=1) and applied[1] == pytest.approx(400.9, abs=2)
    await asyncio.sleep(0.1)
    module = powered.rig.slots[0].module
    assert module is not None
    assert [c.freq_mhz for c in module.chain.chips] == pytest.approx(applied)


async def test_unknown_board_cannot_be_clocked(powered: Powered, chain: Bm13xxChain) -> None:
    await chain.enumerate()
    powered.envelope.forget_board(0)
    with pytest.raises(SafetyViolation, match="no trusted module identity"):
        await chain.ramp_frequency(400)


async def test_noisy_line_costs_frames_not_correctness(
    powered: Powered, chain: Bm13xxChain
) -> None:
    await chain.enumerate()
    chain.set_version_mask()
    chain.set_ticket_difficulty(256)
    await chain.ramp_frequency(500, step_mhz=50, step_delay_s=0.01)
    chain.send_job(job(3))
    # The noise starts once the chips hash: a job still in the line would be garbled too.
    async with asyncio.timeout(60):
        while not chain.counters.nonces:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    clean_frames, clean_nonces = chain.decoder.stats.frames, chain.counters.nonces
    powered.rig.uart_noise(0, 0.01, 0.002)
    # Judged over frames, not seconds: 100 frames (~1,100 bytes at 1.2 % per byte) all
    # arriving clean would be a one-in-a-million run; a starved simulator just takes longer.
    async with asyncio.timeout(120):
        while (  # noqa: ASYNC110
            chain.decoder.stats.frames - clean_frames < 100
            or chain.counters.nonces <= clean_nonces + 10
        ):
            await asyncio.sleep(0.1)
    stats = chain.decoder.stats
    assert stats.crc_errors + stats.discarded_bytes > 0
    # A flipped bit that still passes CRC5 is rare; such a nonce fails verification.
    assert chain.counters.hw_errors <= chain.counters.nonces * 0.05


async def test_stale_job_ids_count_as_hardware_errors(chain: Bm13xxChain) -> None:
    info = await chain.enumerate()

    def nonce_from(address: int) -> int:
        wire = (3 << 25) | (address << 17) | 0x1234  # core 3, chip address, nonce bits
        return int.from_bytes(wire.to_bytes(4, "big"), "little")

    chain.feed(nonce_reply(nonce_from(info.address(2)), 9, 0, 0))  # job 9 was never sent
    assert chain.counters.stale == 1
    assert chain.counters.chips[2].hw_errors == 1
    chain.feed(nonce_reply(nonce_from(info.address(2) + 1), 9, 0, 0))  # between two chips
    assert chain.counters.unknown_chip == 1
    assert chain.counters.hw_errors == 2


def test_missing_serial_device_names_the_path() -> None:
    with pytest.raises(DeviceMissingError, match="/dev/ttyNOPE9"):
        open_serial("/dev/ttyNOPE9")


async def test_a_slow_simulator_mid_reply_does_not_make_chips_silent(powered: Powered) -> None:
    """Replies held up by a starved simulator (its clock stops too) are waited for, not
    counted as chips that did not answer."""
    await powered.rail_up()
    port = open_serial(powered.rig.uart_paths[0])
    chain = Bm13xxChain(port, slot=0, envelope=powered.envelope, clock=powered.rig.now)
    async with chain.attached():
        await chain.enumerate(expected_chips=CHIPS)

        async def starve_the_simulator_mid_reply() -> None:
            while not (chain._register_waiters and chain._register_waiters[0][1]):  # noqa: ASYNC110
                await asyncio.sleep(0.001)  # until the first replies are in
            with powered.rig.lock:  # the simulator's thread cannot move bytes meanwhile
                await asyncio.sleep(0.6)  # far beyond the 0.1 s quiet gap, by the wall clock

        starving = asyncio.create_task(starve_the_simulator_mid_reply())
        missing = await chain.poll_chips(timeout_s=1.0)
        await starving
    assert missing == []

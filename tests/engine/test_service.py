"""The engine service: concurrent requests give the tokens of each alone; finals first; stale partials replaced;
overload sheds partials, never finals; cancellation frees the queue."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engine.messages import DecodeOptions
from engine.scheduler import STALE_S, Overloaded, Request, Scheduler, Superseded
from engine.service import Engine
from tests.conftest import load_clip


def test_scheduler_policy():
    now = [0.0]
    s = Scheduler(max_queue=3, clock=lambda: now[0])
    a = np.zeros(16000, np.float32)
    ids = lambda taken: [i for i, _, _ in taken]  # noqa: E731
    p1, _ = s.add(Request("s1", a, final=False))
    p2, dropped = s.add(Request("s1", a, final=False))
    assert [i for i, _ in dropped] == [p1] and isinstance(dropped[0][1], Superseded)
    assert s.waiting("s1") and not s.waiting("s2")  # a partial of s1 is queued: a newer one would replace it
    f1, _ = s.add(Request("s2", a, final=True))
    p3, _ = s.add(Request("s3", a, final=False))
    p4, dropped = s.add(Request("s4", a, final=False))  # over the bound: the oldest partial goes
    assert [i for i, _ in dropped] == [p2] and isinstance(dropped[0][1], Overloaded) and s.shed == 1 and s.superseded == 1
    for _ in range(5):
        s.add(Request("s5", a, final=True))  # finals are never shed
    assert len(s.finals) == 6
    now[0] = 0.5
    batch, _ = s.schedule(7)  # finals are encoded alone: a partial beside them would only delay them
    assert [r.final for _, r, _ in batch] == [True] * 6 and batch[0][0] == f1 and batch[0][2] == 0.5  # 0.5 s late
    assert ids(s.schedule(1)[0]) == [p3]
    assert s.cancel("s4") == [p4] and len(s) == 0 and not s.due
    for i in range(4):  # 4 pauses of 1 s: a 2.5 s budget takes two, a final is taken whatever the budget
        s.add(Request(f"b{i}", a, final=False, pause=True))
    assert len(s.schedule(8, budget_s=2.5)[0]) == 2
    s.add(Request("big", np.zeros(16000 * 5, np.float32), final=True))
    assert [r.final for _, r, _ in s.schedule(8, budget_s=2.5)[0]] == [True]
    s.schedule(8)
    p5, _ = s.add(Request("s6", a, final=False))  # a pause's decode: the segment ended there, it is the final now
    assert s.promote("s6") and not s.promote("s6") and ids(s.schedule(1, final_in_flight=True)[0]) == [p5]
    # pauses before partials, earliest due first; only pauses while partials must wait; a partial goes alone
    p6, _ = s.add(Request("s7", a, final=False, slack_s=0.25))
    p7, _ = s.add(Request("s8", a, final=False, pause=True, slack_s=0.3))
    assert ids(s.schedule(8, final_in_flight=True)[0]) == [p7]
    p8, _ = s.add(Request("s9", a, final=False, pause=True, slack_s=0.25))
    assert not s.waiting("s9")  # a queued pause is not a waiting partial
    p9, _ = s.add(Request("s10", a, final=False, slack_s=0.1))
    assert ids(s.schedule(8)[0]) == [p8]
    assert ids(s.schedule(8)[0]) == [p9] and ids(s.schedule(8)[0]) == [p6]
    # a segment's first words before other partials, whatever their due times
    later, _ = s.add(Request("s11", a, final=False, slack_s=0.2))
    first, _ = s.add(Request("s12", a, final=False, slack_s=0.5, first=True))
    assert ids(s.schedule(8)[0]) == [first] and ids(s.schedule(8)[0]) == [later]
    f2, _ = s.add(Request("s11", a, final=True, slack_s=0.2))
    f3, _ = s.add(Request("s12", a, final=True))
    assert ids(s.schedule(8)[0]) == [f3, f2]
    # a partial queued STALE_S past its due is shed when the next batch is formed; a pause is not
    p10, _ = s.add(Request("s13", a, final=False, slack_s=0.25))
    p11, _ = s.add(Request("s14", a, final=False, pause=True, slack_s=0.3))
    now[0] += 0.25 + STALE_S + 0.01
    taken, shed = s.schedule(8, final_in_flight=True)
    assert ids(taken) == [p11] and [i for i, _ in shed] == [p10] and isinstance(shed[0][1], Overloaded)


def test_partials_spend_credit_that_the_clock_gives_back():
    now = [0.0]
    s = Scheduler(partial_share=0.5, clock=lambda: now[0])
    a = np.zeros(16000, np.float32)
    p1, _ = s.add(Request("s1", a, final=False))
    taken, _ = s.schedule(8)
    s.charge([r for _, r, _ in taken], 2.0)  # previews took 2 s of the encoder: 1 s more than the burst held
    s.add(Request("s2", a, final=False, slack_s=5.0))  # not stale while it waits
    assert s.schedule(8)[0] == [] and s.wake_in() == 2.0  # 1 s of credit owed, earned back at 0.5 s per second
    assert s.wake_in(final_in_flight=True) is None  # a final decoding: partials wait for it, not for credit
    now[0] = 2.0
    assert len(s.schedule(8)[0]) == 1
    s.charge([Request("s3", a, final=False, pause=True)], 5.0)  # pauses may become finals: they cost no credit
    assert s.credit == 0.0
    with pytest.raises(ValueError):
        Scheduler(partial_share=0)


def test_concurrent_streams_match_each_alone(runners, speech):
    runner = runners("base", "int8")  # the default compute type: batching is exact there too
    audios = [load_clip(c)[: 16000 * 30] for c in speech]
    opts = [DecodeOptions(language=c.language) for c in speech]
    alone = [runner.transcribe([a], o)[0].result.tokens for a, o in zip(audios, opts)]
    engine = Engine(runner)

    async def main():
        return await asyncio.gather(*[engine.transcribe(a, o, stream=f"s{i}") for i, (a, o) in enumerate(zip(audios, opts))])

    try:
        together = asyncio.run(main())
    finally:
        engine.close()
    assert [t.result.tokens for t in together] == alone
    assert max(engine.stats.batch_sizes) > 1  # they were batched


def test_partial_flood_never_holds_back_a_final(runners, speech):
    runner = runners("base", "int8")
    audio = load_clip(speech[0])
    engine = Engine(runner, max_queue=8)

    async def main():
        partials = [asyncio.ensure_future(engine.transcribe(audio[:16000 * 2], DecodeOptions(language="en"), stream=f"p{i}", final=False))
                    for i in range(30)]
        final = await engine.transcribe(audio, DecodeOptions(language="en"), stream="f", final=True)
        batches_when_final_done = engine.stats.batches
        results = await asyncio.gather(*partials, return_exceptions=True)
        return final, batches_when_final_done, results

    try:
        final, batches, results = asyncio.run(main())
    finally:
        engine.close()
    assert "fellow Americans" in final.text
    assert batches <= 2  # at most the batch already running when the final arrived, then the final's own
    shed = [r for r in results if isinstance(r, Overloaded)]
    assert shed and len(shed) + sum(not isinstance(r, Exception) for r in results) == 30


def test_cancel_stream_frees_its_queue(runners, speech):
    runner = runners("base", "int8")
    audio = load_clip(speech[0])
    engine = Engine(runner)

    async def main():
        busy = asyncio.ensure_future(engine.transcribe(audio, DecodeOptions(language="en"), stream="other"))
        mine = [asyncio.ensure_future(engine.transcribe(audio, DecodeOptions(language="en"), stream="gone")) for _ in range(20)]
        await asyncio.sleep(0.05)
        freed = engine.cancel_stream("gone")
        out = await asyncio.gather(*mine, return_exceptions=True)
        await busy
        return freed, out

    try:
        freed, out = asyncio.run(main())
    finally:
        engine.close()
    assert freed >= 1 and engine.queue_depth == 0
    assert sum(type(r).__name__ == "Cancelled" for r in out) == freed


def test_a_segment_joins_a_running_batch_and_leaves_when_done(runners, speech):
    """Continuous batching: a short segment arriving while a long one decodes joins the running batch between
    decoder steps, finishes first, and gets the same tokens as alone (float32, as above)."""
    runner = runners("base", "float32")
    long_audio, short_audio = load_clip(speech[0])[: 16000 * 30], load_clip(speech[0])[: 16000 * 3]
    opts = DecodeOptions(language=speech[0].language)
    alone = [runner.transcribe([a], opts)[0].result.tokens for a in (long_audio, short_audio)]
    engine = Engine(runner)

    async def main():
        order = []

        async def run(audio, name):
            t = await engine.transcribe(audio, opts, stream=name)
            order.append(name)
            return t

        first = asyncio.ensure_future(run(long_audio, "long"))
        while engine.stats.steps < 3:  # the long segment is decoding
            await asyncio.sleep(0.005)
        second = await run(short_audio, "short")
        return await first, second, order

    try:
        long_t, short_t, order = asyncio.run(main())
    finally:
        engine.close()
    assert order == ["short", "long"]
    assert [long_t.result.tokens, short_t.result.tokens] == alone
    assert engine.stats.batches == 2 and engine.stats.batch_sizes[-1] == 2  # it joined: two rows after admission


def test_partials_take_at_most_their_share_of_the_worker(runners, speech):
    """Four streams asking for partials back to back would keep the encoder busy all the time; with a 25 % share
    it spends about a quarter of the wall clock on them (plus the saved-up burst and one admission in flight when
    the credit ran out) and the rest of the time is free for finals and pauses."""
    runner = runners("base", "int8")
    audio = load_clip(speech[0])[: 16000 * 4]
    engine = Engine(runner, partial_share=0.25)
    wall_s = 6.0

    async def stream(name: str) -> int:
        done, end = 0, asyncio.get_running_loop().time() + wall_s
        while asyncio.get_running_loop().time() < end:
            # due at the end of the run: none is shed as stale while it waits for the share (that is another test)
            await engine.transcribe(audio, DecodeOptions(language="en"), stream=name, final=False, slack_s=wall_s)
            done += 1
        return done

    async def main():
        t0 = asyncio.get_running_loop().time()
        served = await asyncio.gather(*[stream(f"s{i}") for i in range(4)])
        return served, asyncio.get_running_loop().time() - t0

    try:
        served, elapsed = asyncio.run(main())
    finally:
        engine.close()
    assert all(n >= 1 for n in served)
    assert engine.stats.encode_s <= 0.25 * elapsed + 2.5, (engine.stats.encode_s, elapsed, served)
    with pytest.raises(ValueError):
        Engine(runner, partial_share=0)


def test_a_looped_decode_is_encoded_again_in_full_and_a_preview_is_not(runners, speech):
    """A decode that loops in trim mode is encoded again, ahead of the queue: the segment in full when it extended
    its stream's kept encoding (an approximation, as on a busy engine), then its 30 s window. A partial's is not
    (it shows what came before the loop): under load that encode would hold up the finals behind it. Decodes with
    `loops` count as looped once they have 16 tokens (a compression-ratio bar below any text's)."""
    runner = runners("base", "int8")
    audio = load_clip(speech[0])
    loops = DecodeOptions(language="en", repeat_tokens=1, compression_ratio_threshold=0.01)
    calls: list[tuple[str | None, bool]] = []  # (encoder, whether a row extended a kept encoding)
    start = runner.start
    runner.start = lambda audios, options, keys, encoder=None, previews=None: (  # type: ignore[method-assign]
        calls.append((encoder, any(p is not None for p in previews or []))),
        start(audios, options, keys, encoder, previews))[1]
    engine = Engine(runner)

    async def main():
        partial = await engine.transcribe(audio[: 16000 * 8], loops, stream="s", final=False)
        after_partial = len(calls)
        # two streams' finals at once (a busy engine): the first extends what its partial kept
        finals = await asyncio.gather(engine.transcribe(audio[: 16000 * 9], loops, stream="s"),
                                      engine.transcribe(audio[: 16000 * 4], DecodeOptions(language="en"), stream="o"))
        return partial, after_partial, finals

    try:
        partial, after_partial, finals = asyncio.run(main())
    finally:
        engine.close()
        del runner.start
    assert partial.result.looped and after_partial == 1  # shown as it is: not encoded again
    assert calls[1][1] and [e for e, _ in calls[1:]][-2:] == ["trim", "full"]  # in full, then the window
    assert all(f.text for f in finals)


def test_a_worker_keeps_its_share_of_the_cores(runners):
    """Each worker thread takes its share of the cores once (ModelRunner.share_cores); the other worker then sets
    another count for itself (the encoder, whenever the decoder is idle), and the first one's later ops must still
    run on its own share, not on the count set last by any thread (torch's lazy per-thread init took that one: the
    decoder then stepped on two threads, one of them spinning on the encoder's core)."""
    import threading

    import torch

    runner = runners("base", "int8")
    main_count = torch.get_num_threads()
    shared, other_set, seen = threading.Event(), threading.Event(), {}

    def share() -> None:  # what a thread's share is, read at once
        runner.share_cores(2)
        seen["share"] = torch.get_num_threads()

    def worker() -> None:
        runner.share_cores(2)
        shared.set()
        other_set.wait(10)
        torch.ones(1 << 16).cumsum(0)  # the thread's first op, after the other thread set its count
        seen["after"] = torch.get_num_threads()

    def other(count: int) -> None:
        shared.wait(10)
        torch.set_num_threads(count)
        other_set.set()

    threads = [threading.Thread(target=share), threading.Thread(target=worker),
               threading.Thread(target=other, args=(main_count + 1,))]
    threads[0].start()
    threads[0].join(20)
    try:
        for t in threads[1:]:
            t.start()
        for t in threads[1:]:
            t.join(20)
    finally:
        restore = threading.Thread(target=torch.set_num_threads, args=(main_count,))  # the count new threads take
        restore.start()
        restore.join()
    assert seen["after"] == seen["share"] <= main_count, seen

"""Two extensions of Task, headless: a CommTask reporting progress, then a random search with Trial.Task.

Run it with `python examples/comm_and_random_search.py`; it takes a few seconds.

Part 1 trains a toy model in two process workers. Each worker sends its progress
through its `Comm` and asks the main process, half way, whether to go on.

Part 2 is a random search written the guide's incremental way: ask for a
configuration when the scheduler starts and on each report, stop after
`N_TRIALS` reports or once a loss is below `TARGET`, and find the best report
in the recorded reports (`task.df()`).
"""

from __future__ import annotations

import random
import time

from byop_nb.optimization import Trial
from byop_nb.scheduling import Comm, CommTask, Scheduler


# -- part 1: progress messages and a question ------------------------------------------
def train(comm: Comm, name: str, epochs: int) -> float:
    loss = 10.0
    with comm:
        for epoch in range(epochs):
            time.sleep(0.02)
            loss *= 0.8
            comm.send({"model": name, "epoch": epoch, "loss": round(loss, 3)})
            if epoch == epochs // 2 and not comm.request({"model": name, "question": "go on?", "loss": loss}):
                break
    return loss


def run_progress_demo() -> None:
    scheduler = Scheduler.with_processes(2)
    task = CommTask(train, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task("small", 8)
        task("large", 8)

    @task.on_message
    def progress(msg: Comm.Msg) -> None:
        print(f"  progress {msg.data}")

    @task.on_request
    def decide(msg: Comm.Msg) -> None:
        go_on = msg.data["model"] == "large"  # stop the small one early
        print(f"  {msg.data['model']} asks {msg.data['question']!r} -> {go_on}")
        msg.respond(go_on)

    @task.on_returned
    def done(loss: float) -> None:
        print(f"  finished with loss {loss:.3f}")

    print("CommTask with progress messages:")
    scheduler.run(timeout=30)
    print(f"  messages {task.counts.get(task.MESSAGE, 0)}, requests {task.counts.get(task.REQUEST, 0)}")


# -- part 2: random search --------------------------------------------------------------
N_TRIALS = 40
TARGET = 0.05


def objective(trial: Trial) -> Trial.Report:
    with trial.begin():
        x, y = trial.config["x"], trial.config["y"]
        if x * y > 10:
            raise ValueError("unstable region")
        loss = (x - 1.0) ** 2 + (y + 2.0) ** 2
    if trial.exception is not None:
        return trial.crashed()
    return trial.success(loss=loss)


def run_random_search(seed: int = 0) -> None:
    rng = random.Random(seed)
    scheduler = Scheduler.with_processes(2)
    task = Trial.Task(objective, scheduler)
    counter = iter(range(10**9))

    def sample() -> Trial:
        config = {"x": rng.uniform(-5, 5), "y": rng.uniform(-5, 5)}
        return Trial(name=f"trial-{next(counter)}", config=config, info={"seed": seed})

    @scheduler.on_start(repeat=2)  # keep both workers busy
    @task.on_report
    def ask() -> None:
        task(sample())

    @task.on_report(when=lambda: len(task.history) >= N_TRIALS)
    def enough() -> None:
        scheduler.stop()

    @task.on_success(when=lambda: task.df()["result.loss"].min() <= TARGET)
    def good_enough() -> None:
        scheduler.stop()

    @task.on_crashed
    def crashed(report: Trial.Report) -> None:
        print(f"  {report.trial.name} crashed: {report.exception!r}")

    print("Random search with Trial.Task:")
    exit_code = scheduler.run(timeout=60)
    df = task.df()
    best = df[df.status == "success"].sort_values("result.loss").iloc[0]
    print(f"  {exit_code}: {len(df)} reports, {df.status.value_counts().to_dict()}")
    print(f"  best {best.trial}: loss={best['result.loss']:.4f} at x={best['config.x']:.3f}, y={best['config.y']:.3f}")
    print(df[["trial", "status", "config.x", "config.y", "result.loss", "wall_time"]].tail(5).to_string(index=False))


if __name__ == "__main__":
    run_progress_demo()
    run_random_search()

"""A headless demo: keep two process workers busy for a few seconds, then show the results."""

import random
import time

from byop_nb.scheduling import Scheduler, Task


def noisy_square(x: int) -> int:
    time.sleep(random.random() * 0.2)
    if x == 0:
        raise ValueError("x cannot be 0")
    return x * x


if __name__ == "__main__":
    scheduler = Scheduler.with_processes(2)
    task = Task(noisy_square, scheduler)

    @scheduler.on_start(repeat=4)
    @task.on_done
    def submit() -> None:
        task(random.randrange(10))

    exit_code = scheduler.run(timeout=5)
    print(exit_code)
    print(scheduler.counts_df().to_string(index=False))
    df = task.df()
    print(df.groupby("status").size().to_string())
    columns = ["call", "arg.x", "status", "result", "exception_type", "exception_message", "duration"]
    print(df[columns].tail(8).to_string(index=False))  # every column: df.columns; tracebacks: df["traceback"]

"""`atf serve` with a fault injected into the primary model, for the failover tests:

    python tests/faulty_server.py FAULT MODEL_DIR [atf serve options]

FAULT is `raise` (the primary's predict raises RuntimeError) or `delay:MS` (it sleeps MS milliseconds, then answers).
Only the primary is affected, in every generation of models (reloads included); the fallback answers as usual.
The service itself has no fault switch: faults are the tests' business."""
import sys
import time

from atf.serving import app, cli


def faulty(predict, fault: str):
    "`predict` (a bound ModelHandle.predict) made to raise, or to sleep before answering."
    def run(features, state=None):
        if fault == "raise": raise RuntimeError("injected fault")
        time.sleep(float(fault.removeprefix("delay:")) / 1e3)
        return predict(features, state)
    return run


def with_fault(load_models, fault: str):
    "`atf.serving.app.load_models`, with the fault in each primary it loads (after its check on training medians)."
    def load(cfg, generation: int = 1):
        models = load_models(cfg, generation)
        if models.primary is not None: models.primary.predict = faulty(models.primary.predict, fault)
        return models
    return load


if __name__ == "__main__":
    fault = sys.argv.pop(1)
    if fault != "raise" and not fault.startswith("delay:"): sys.exit(f"faulty_server: unknown fault {fault!r}")
    app.load_models = with_fault(app.load_models, fault)
    sys.exit(cli.main())

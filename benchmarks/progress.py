"""Progress of a benchmark's main loop on a `keras.utils.Progbar`.

`common.parse_args` sets `VERBOSE` from `--verbose`; `Progress` (and
`step_timing.compare_step_times`, through it) use it unless given their
own level.
"""

import sys

# The `--verbose` level `common.parse_args` resolved.
VERBOSE = 1


class Progress:
    """Progress of a benchmark's main loop on a `keras.utils.Progbar`.

    Iterate over it as over `items`; the bar advances when the loop body of
    an item is done. `verbose` follows Keras: 0 silent, 1 a bar redrawn in
    place with an ETA, 2 no bar (for log files) but the loop's lines and a
    summary line at the end. Lines the loop prints go through `log`, which
    keeps them off the bar's line.

    Args:
        items: what the loop runs over (a sized iterable).
        unit: what one item is, e.g. `"seed"` (shown as "s/seed").
        verbose: 0, 1 or 2; default the `--verbose` of `parse_args`.
    """

    def __init__(self, items, unit="item", verbose=None):
        import keras

        self.items = list(items)
        self.verbose = VERBOSE if verbose is None else verbose
        self.done = 0
        self.bar = keras.utils.Progbar(
            len(self.items), verbose=self.verbose, interval=0, unit_name=unit
        )

    def __iter__(self):
        if self.verbose == 1 and self.items:
            self.bar.update(0)
        for item in self.items:
            yield item
            self.done += 1
            self.bar.update(self.done)

    def log(self, message):
        """Prints `message` on its own line (above the bar at verbose 1)."""
        if self.verbose == 0:
            return
        if self.verbose == 1 and self.done < len(self.items):
            # Clear the bar's line, print, then draw the bar again below
            # (not at 1: a second update(1) restarts Progbar's step timer;
            # the next item's update draws it).
            sys.stdout.write("\r\x1b[2K")
            print(message, flush=True)
            if self.done != 1:
                self.bar.update(self.done)
        else:
            print(message, flush=True)

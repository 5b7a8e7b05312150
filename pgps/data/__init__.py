"""Data: synthetic datasets (:mod:`pgps.data.synth`, needs ``pgps[synth]`` to write NIfTI), case difficulty
(:mod:`pgps.data.difficulty`, CDL-UNet's reliability and difficulty scores) and the data-level curriculum over cases
(:mod:`pgps.data.curriculum`). numpy-only but for writing images; imports the core, never an adapter."""

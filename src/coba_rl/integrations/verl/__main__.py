"""``python -m coba_rl.integrations.verl``: see :mod:`coba_rl.integrations.verl.launcher`."""

from coba_rl.integrations.verl.launcher import main

if __name__ == "__main__":
    main()

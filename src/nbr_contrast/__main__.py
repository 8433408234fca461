"""``python -m nbr_contrast`` → :func:`nbr_contrast.cli.main`."""

from nbr_contrast.cli import main

if __name__ == "__main__":
    main()

"""``python -m nbr_contrast`` → :func:`nbr_contrast.app.cli.main`."""

from nbr_contrast.app.cli import main

if __name__ == "__main__":
    main()

"""`python -m posemum_deploy.cli ...` (used by torchrun for distributed training)."""
from posemum_deploy.cli.app import main

if __name__ == "__main__":
    main()

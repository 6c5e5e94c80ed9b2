"""The modular multi-modal multi-task model, its data, and the hierarchical trainer that executes a plan."""

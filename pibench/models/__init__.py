"""Defining models: the config of a variant, the one model definition written against the `Ops`
interface, its interpreters (symbolic shapes, plaintext torch), the registered variants, the operation
kinds costs are counted by. Imports only `pibench.util`."""

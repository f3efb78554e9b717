"""Modules the tests share that are not tests: loopback servers, the fault day, archive builders."""

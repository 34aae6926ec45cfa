"""DICOM bytes -> plain records -> safe path names. Pure: reads what it is given, writes nothing."""

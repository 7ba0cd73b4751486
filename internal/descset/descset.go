// Package descset gathers file descriptors with their imports: into a
// descriptor set, as `buf build -o` does, or into the types that JSON needs
// to resolve Any and extensions.
package descset

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Marshal returns the FileDescriptorSet of files and all their imports,
// imports first.
func Marshal(files ...protoreflect.FileDescriptor) ([]byte, error) {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(f protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		for i := range f.Imports().Len() {
			add(f.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	for _, f := range files {
		add(f)
	}
	return proto.Marshal(set)
}

// Types returns the message, enum and extension types of files and all
// their imports, each file once.
func Types(files ...protoreflect.FileDescriptor) (*dynamicpb.Types, error) {
	reg := new(protoregistry.Files)
	var add func(f protoreflect.FileDescriptor) error
	add = func(f protoreflect.FileDescriptor) error {
		if _, err := reg.FindFileByPath(f.Path()); err == nil {
			return nil
		}
		imports := f.Imports()
		for i := range imports.Len() {
			if err := add(imports.Get(i).FileDescriptor); err != nil {
				return err
			}
		}
		if err := reg.RegisterFile(f); err != nil {
			return fmt.Errorf("descset: register %s: %w", f.Path(), err)
		}
		return nil
	}
	for _, f := range files {
		if err := add(f); err != nil {
			return nil, err
		}
	}
	return dynamicpb.NewTypes(reg), nil
}
